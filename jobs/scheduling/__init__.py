"""
Who runs next and when: what this deployment serves, the claim and the
fair policy, queue positions and estimated starts, the fleet page's view.
"""
