"""plantd: a Kubernetes-native platform for distributed control systems."""

# The one place the version lives; pyproject.toml reads it (a literal keeps CLI start-up fast).
__version__ = "0.1.0"
