"""The Faust worker: topics, agents, and the batch decoding they share."""
