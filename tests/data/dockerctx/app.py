print("dockerfile-image-ran")
