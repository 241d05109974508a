"""The field's other resampling methods as analyses of critwin's curves: each reads a `Curve` (or a run's
records) and places the decisive token its own way, so that they can be run and compared on one engine.

`anchors`: Thought Anchors (Bogdan et al., 2025): each sentence's resampling importance. `critical`:
Critical Tokens (Lin et al., 2024): the earliest prefix from which success is shown to be
(practically) impossible. `pivotal`: Pivotal Token Search (Abdin et al., 2024): tokens whose keeping moves
P(success) by a threshold, and DPO preference pairs at them. `forks`: Forking Paths (Bigelow et al., 2024):
outcome distributions after forcing alternative tokens, their change points and survival.
"""
