"""Antenna: the federated gateway to EuroHPC AI supercomputers."""
