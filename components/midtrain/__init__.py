from components.midtrain.component import midtrain

__all__ = ["midtrain"]
