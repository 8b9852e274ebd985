"""``driftwarden demo``: a real model on real data, served, monitored and drifting, in one process.

``model`` trains the random forest on January 2011, ``server`` serves it (MLServer, else a
built-in Open Inference Protocol server), ``replay`` sends January and February through the
collector in accelerated time with the ground truth a simulated day later, ``status`` shows
the progress, ``run`` puts them together on a :class:`driftwarden.up.Platform`.
"""
