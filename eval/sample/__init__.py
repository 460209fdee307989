"""The bundled sample: its text (corpus), how its data is prepared and cached (bundled), the model
shipped in model/ and the script that trained it (train)."""
