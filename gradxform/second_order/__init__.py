"""Second-order optimization: line searches, Newton, Newton-CG, BFGS, L-BFGS and ``minimize``.

The layers, each a module:

* :mod:`~gradxform.second_order.directions`: the curvature models and
  directions as pure functions (L-BFGS two-loop recursion, BFGS update,
  modified Newton step, truncated CG);
* :mod:`~gradxform.second_order.linesearch`: the strong-Wolfe zoom and
  backtracking searches, and their transforms;
* :mod:`~gradxform.second_order.methods`: each method as one record of pure
  functions (model, direction, update, first-step and restart rules);
* :mod:`~gradxform.second_order.iteration`: the one iteration every method
  runs, used by both
* :mod:`~gradxform.second_order.transforms` (``scale_by_lbfgs`` and the
  others; :mod:`~gradxform.second_order.aliases` chains them with the step
  sign) and :mod:`~gradxform.second_order.minimize` (a whole solve in one
  jitted loop), which returns the record of
* :mod:`~gradxform.second_order.solution`: ``Solution``, ``Status`` and
  ``History``, shared by every solver.

Every public name is documented at ``gradxform.<name>``.
"""
