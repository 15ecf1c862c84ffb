"""``python -m equinorm.train``: see :mod:`equinorm.train.app`."""

from equinorm.train.app import main

if __name__ == "__main__":
    main()
