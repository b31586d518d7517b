"""Human video: the `egodex` and `video-keypoints` converters, hand poses and captions."""
