"""docker0: Docker v0.1.3 (spring 2013) rebuilt in Python on LXC 5 and overlayfs."""
VERSION = "0.1.3"
