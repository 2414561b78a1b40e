"""Transform families; every public name is documented at ``gradxform.<name>``."""
