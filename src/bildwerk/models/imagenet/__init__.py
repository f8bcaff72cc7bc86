"""The ImageNet-1k classifier (efficientnet-lite0) and what its 1000 classes are called.

``labels`` (class names, caption -> classes) needs nothing heavy; ``classifier`` loads
torch. The evaluation harness uses both as its judge, the offline describer
(``prompts.describe.local``) names pictures with them. Nothing here imports the
prompt, engine, training or evaluation layers.
"""
