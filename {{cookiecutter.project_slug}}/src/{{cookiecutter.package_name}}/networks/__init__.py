"""Networks: plain ``nn.Module`` classes built from ``(input_shape, num_classes, ...)``.

The system (``system.Classifier``) builds the network once the data module has told it the
input shape and the number of classes, so a config names only the network's own options.
"""
