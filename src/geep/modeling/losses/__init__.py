"""Loss functions of the survey's training methods, one small file per paper (issue 26).

Each file holds pure functions of the exit outputs and the labels, with the method's published weighting as
defaults, and cites its paper and the equation it implements. ``geep.modeling.objectives`` registers them as
objectives; nothing here imports it (so the registry can import these files).
"""
