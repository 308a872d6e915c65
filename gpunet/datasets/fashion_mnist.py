"""Fashion-MNIST (Keras' ``keras.datasets.fashion_mnist``): 28x28 grey images of 10 clothing classes.

Found in Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) before
any download. Class names: :data:`CLASS_NAMES`.
"""
from __future__ import annotations

from ._loader import IDXFile, Spec, load

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")

# md5: the published .gz files; content_sha256: the decompressed IDX bytes (also matches Debian's
# recompressed copies, whose .gz SHA-256 are recorded in DEBIAN_GZ_SHA256).
SPEC = Spec(
    name="fashion_mnist",
    shapes=((60000, 28, 28), (60000,), (10000, 28, 28), (10000,)),
    idx=(IDXFile("train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                 content_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
         IDXFile("train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe",
                 content_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
         IDXFile("t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79",
                 content_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
         IDXFile("t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310",
                 content_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    mirrors=(("idx", "https://storage.googleapis.com/tensorflow/tf-keras-datasets"),
             ("idx", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com")),
)

DEBIAN_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


def load_data(path=None, verbose: bool = True):
    """``(x_train, y_train), (x_test, y_test)``: uint8 ``(60000, 28, 28)``, ``(60000,)``, ``(10000, 28, 28)``,
    ``(10000,)``. Same search order as :func:`gpunet.datasets.mnist.load_data`, with Debian's package
    folder checked before downloading."""
    return load(SPEC, path, verbose=verbose)
