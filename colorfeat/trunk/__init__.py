"""Building a torchvision trunk, its weights, and the feature extraction engine.

Importing this package imports no PyTorch; its modules do, except `version` and `weights`.

Trunks: `graph` (a model cut at a node: `Trunk`), `shapes` (which backbones and nodes, feature
shapes by a meta-device trace), `weights` (where weights come from, whether they can be had),
`state` (state-dict files, loading, hashing), `backbone` (`create_trunk`), `fuse` (inference
copies), `preprocess` (the trunk's input), `provenance` (the attrs that describe a trunk).
The features stage: `extract` (the stage), `blocks` (its plan), `engine` (the compute),
`pipeline` (the threaded loop), `output` (the feature arrays), `markers` (done-markers),
`cluster` (Dask tasks on GPU-resource workers), `devices` (which devices), `version` (its code
version).
"""
