"""Layer 1: pretraining data. Imports only `metaicl.core`.

Door: `pretrain_data.build.build(cfg, data_root) -> Manifest`; reader: `pretrain_data.reader`.
"""
