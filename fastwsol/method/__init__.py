"""The method: ``reference`` (the spec in plain PyTorch) and ``compiled`` (torch.compile of it).

The names of the localisation maps live here, not in ``reference``, so that the command line
can offer them without importing torch."""

MAP_KINDS = ("cam", "norm", "sim")  # the keys of reference.localization_maps (docs/method.md Table 5)
