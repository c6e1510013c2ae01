"""A trained model put to use: on another data set, on photos and videos, and
in the JupyterLab explorer."""
