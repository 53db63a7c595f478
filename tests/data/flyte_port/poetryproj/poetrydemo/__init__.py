VALUE = "poetrydemo"
