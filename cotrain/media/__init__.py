"""Media codecs: JPEG images and video frames, shared by converters, the loader and the simulator."""
