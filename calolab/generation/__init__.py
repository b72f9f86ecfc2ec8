"""Sample generation: Pythia 8 events, parametrised detector response, ROOT ntuples."""
