"""A trained model put to use: on another data set, on face photos, and in the JupyterLab
explorer."""
