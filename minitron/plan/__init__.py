"""Memory and time planning of training stages (`minitron plan`)."""
