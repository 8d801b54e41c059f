"""Network definitions and builders: SR generator/discriminator, classifier factory."""
