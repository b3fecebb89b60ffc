"""qwenlayers platform plugin: Ascend A5 (DAV_3510) simulated on the CPU by pypto's SIM mode."""
