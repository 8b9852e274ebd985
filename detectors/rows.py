"""Which stored inference rows the detectors read.

A row whose names and values arrays differ in length (a client that sent a broken event, stored
as received so that nothing is dropped) cannot be paired name by name: ``ARRAY JOIN`` over it
fails the whole query. Every detector reads only rows that satisfy :data:`WELL_FORMED`; the
data-quality detector counts the others (``malformed_rows``).
"""

WELL_FORMED = (
    "length(num_names) = length(num_values) AND length(cat_names) = length(cat_values) "
    "AND length(text_names) = length(text_values) AND length(emb_names) = length(emb_values)"
)
