"""Session-wide test settings shared by every test folder."""

import os
import random

# Isolate this test run's DDS traffic from anything else on the machine (other runs, a live robot):
# a random domain, discovery limited to localhost. Child processes inherit both.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")
