"""course_lib: the library behind the fine-tuning course's notebooks.

Modules, one concept each: config (device, seeds, fast mode, data dir), data (CIFAR-10 and image
folders as tensors), images (a photo file as the RGB pixels a model sees), storage (atomic, checked,
verified files), models (ResNet18, weights, freezing), train (fit, evaluate, checkpoints),
gd (gradient-descent toys), plots, widgets, checks (exercise feedback), grading (instructor tools).
"""
__version__ = "0.1.0"
