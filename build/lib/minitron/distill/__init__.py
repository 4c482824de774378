"""Knowledge distillation on the training engine: a frozen teacher beside the trained student.

    vocab_parallel.py  softmax pieces on vocab-parallel logits (TP all-reduces, never the whole vocabulary)
    losses.py          forward / reverse / top-k KL on logits, hidden-state losses, how they combine
    model.py           teacher + student per micro-batch, at any TP x PP (used by recipes/distill.py)
    checks.py          bad input to `minitron distill` refused before anything is written
"""
