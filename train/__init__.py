"""vfnet.train: synthetic data, ATSS, Varifocal Loss, the training loop and COCO evaluation.
Depends on vfnet.model (and on vfnet.server.runtime for evaluation, so it measures what is served)."""
