"""qwenlayers platform plugin for Ascend A2/A3 (910B class, arch DAV_2201) on a real NPU."""
