"""Thin KFP v2 components: artifacts -> paths -> one rlsd call -> outputs.

Every component runs its call inside ``rlsd.perimeter.step`` (offline switches, the validated
config, the network guard) and writes that step's connection log as an artifact. Keep logic out
of here: it belongs in src/rlsd/.
"""
