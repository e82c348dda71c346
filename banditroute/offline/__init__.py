"""Offline tools: outcome tables (:mod:`.outcomes`) and decision logs (:mod:`.logs`) read through
:mod:`.tables`; simulation on the service's own core (:mod:`.simulate`); off-policy evaluation
(:mod:`.candidates`, :mod:`.reward_models`, :mod:`.estimators`, :mod:`.evaluate`); cost-weight sweeps
(:mod:`.tune`), frontier metrics (:mod:`.frontier`), plots (:mod:`.plots`) and warm starts
(:mod:`.pretrain`)."""
