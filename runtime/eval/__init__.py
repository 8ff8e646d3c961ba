"""What a finished run is worth: benchmark a checkpoint (evaluate), rank teams (compete),
rebuild a Hugging Face model folder from a swarm checkpoint (reconstruct), publish it
(publish), and the commands for all four (cli). Reads checkpoints and manifests (ops) and
loads models (training); knows nothing of the network or the simulator.
"""
