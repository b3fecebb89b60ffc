"""qwenlayers platform plugin: Ascend A2/A3 (DAV_2201) simulated on the CPU by pypto's SIM mode."""
