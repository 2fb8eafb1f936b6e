"""The scanner's test corpus generator (see :mod:`tests.corpus.generate`)."""
