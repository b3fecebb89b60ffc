"""qwenlayers platform plugin for Ascend A5 (950 class, arch DAV_3510) on a real NPU."""
