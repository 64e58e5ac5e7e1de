"""The model stage: the user's model and data, and the trained baseline.

Takes an experiment's `[model]`, `[data]` and `[train]`; gives an nn.Module (a built-in factory
or the user's `package.module:function`), the fixed data splits (`data.Dataset`) and the trained
(or loaded, or cached) baseline. `factories` makes models, `data` reads and splits data, `train`
trains and evaluates in torch.
"""
