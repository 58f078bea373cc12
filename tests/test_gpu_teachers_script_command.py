"""benchmarks/gpu_teachers/script_command.py: the command a GPU-route script's record keeps."""

import shlex

from benchmarks.gpu_teachers.script_command import script_command


def test_the_command_names_the_script_in_this_repository_and_quotes_its_arguments():
    command = script_command("/tmp/elsewhere/train_keras_apps.py", ["one", "cifar10_resnet50", "--work", "a b"])
    assert command == "python benchmarks/gpu_teachers/train_keras_apps.py one cifar10_resnet50 --work 'a b'"
    assert shlex.split(command)[1:] == ["benchmarks/gpu_teachers/train_keras_apps.py", "one", "cifar10_resnet50",
                                        "--work", "a b"]


def test_without_arguments_it_records_this_process_command_line(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/x/train_torch.py", "one", "sst2", "--epochs", "3"])
    assert script_command("/x/train_torch.py") == "python benchmarks/gpu_teachers/train_torch.py one sst2 --epochs 3"
