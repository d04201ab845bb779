"""Train the seed VAE on MNIST into the current directory, then plot: `python main.py`."""

import sys

from mnist_vae.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
