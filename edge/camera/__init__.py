"""The camera application: the frame loop (:mod:`.loop`), frame sources,
the model hot swap, score smoothing and the outputs (:mod:`.outputs`)."""
