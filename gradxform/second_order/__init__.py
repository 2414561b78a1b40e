"""Second-order optimization: line searches, Newton, Newton-CG, BFGS, L-BFGS and ``minimize``.

Every public name is documented at ``gradxform.<name>``.
"""
