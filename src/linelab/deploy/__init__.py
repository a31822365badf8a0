"""Deploy: models trained from the workspace, a registry, staged rollout judged by the line's own results.

Modules: features (one row per unit from the profile's readings and genealogy), labels (what
happened to each unit, a person's verdicts), train (reproducible training), registry (versions and
their skops files), predict (scores and decisions), drift (input drift by effect size), sequential
(the always-valid promotion test), rollout (stages per station, events, sign-off, rollback),
scoring (batch and per-unit, routed and recorded), serving (what per-unit requests share in a
process), live (feedback joined to predictions; review), timeline (live metrics per stage over
time), export (MLflow's model format).
"""
