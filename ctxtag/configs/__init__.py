"""Run configs (ml_collections): `default` declares every key; `paper` and
`smoke` import it and override."""
