VALUE = "uvdemo"
