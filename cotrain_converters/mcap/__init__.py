"""MCAP robot logs (ROS 2, protobuf, JSON): the `mcap` converter, topic maps and decoding."""
