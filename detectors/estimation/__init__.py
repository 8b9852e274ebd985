"""Performance without labels: CBPE for classifiers (:mod:`.cbpe`), DLE for regressors (:mod:`.dle`)."""
