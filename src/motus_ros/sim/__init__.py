"""Simulated robots that speak the real drivers' ROS interfaces (so the suite runs with no hardware)."""
