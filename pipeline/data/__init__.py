"""Class-folder datasets: scanning, splitting, sampling, and the embedded generated dataset."""
