"""ROS 2 plumbing around motus_model: the model server, its four nodes, the simulated ALOHA driver."""
