"""The data: RAF-DB's reader and the other data sets' converters, face alignment and
landmarks, heatmaps, the synthetic RAF-DB of the demo, and the image tensors and
augmentations that training reads."""
