"""Answers the lesson-2 checks are tested with: each must score 0 (wrong) or full marks (right) on both the
public check and the hidden tests (`python -m course_lib.grading validate` runs them)."""

CASES = {
    "count_trainable": {
        "wrong": {
            "every parameter": "def count_trainable(model):\n    return sum(p.numel() for p in model.parameters())\n",
            "tensors, not values": "def count_trainable(model):\n    return sum(1 for p in model.parameters() if p.requires_grad)\n",
            "the frozen ones": "def count_trainable(model):\n    return sum(p.numel() for p in model.parameters() if not p.requires_grad)\n",
            "head only": "def count_trainable(model):\n    return sum(p.numel() for p in model.fc.parameters())\n",
        },
        "right": {
            "generator": "def count_trainable(model):\n    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n",
            "loop over named parameters": (
                "def count_trainable(model):\n    total = 0\n    for name, weights in model.named_parameters():\n"
                "        if weights.requires_grad:\n            total += weights.nelement()\n    return total\n"),
            "numpy product of shapes": (
                "import numpy as np\n\ndef count_trainable(model):\n"
                "    return int(sum(np.prod(p.shape) for p in model.parameters() if p.requires_grad))\n"),
        },
    },
    "head_groups": {
        "wrong": {
            "frozen included": (
                "def head_groups(model, lr):\n    head = list(model.fc.parameters())\n    ids = {id(p) for p in head}\n"
                "    body = [p for p in model.parameters() if id(p) not in ids]\n"
                "    return [{'params': body, 'lr': lr}, {'params': head, 'lr': 10 * lr}]\n"),
            "head twice": (
                "def head_groups(model, lr):\n    return [{'params': [p for p in model.parameters() if p.requires_grad], 'lr': lr},\n"
                "            {'params': list(model.fc.parameters()), 'lr': 10 * lr}]\n"),
            "rates swapped": (
                "def head_groups(model, lr):\n    head = list(model.fc.parameters())\n    ids = {id(p) for p in head}\n"
                "    body = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]\n"
                "    return [{'params': body, 'lr': 10 * lr}, {'params': head, 'lr': lr}]\n"),
            "head at lr / 10": (
                "def head_groups(model, lr):\n    head = list(model.fc.parameters())\n    ids = {id(p) for p in head}\n"
                "    body = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]\n"
                "    return [{'params': body, 'lr': lr}, {'params': head, 'lr': lr / 10}]\n"),
        },
        "right": {
            "ids": (
                "def head_groups(model, lr):\n    head = [p for p in model.fc.parameters() if p.requires_grad]\n"
                "    ids = {id(p) for p in head}\n"
                "    body = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]\n"
                "    return [{'params': body, 'lr': lr}, {'params': head, 'lr': 10 * lr}]\n"),
            "names": (
                "def head_groups(model, lr):\n    fast, slow = [], []\n"
                "    for name, p in model.named_parameters():\n        if not p.requires_grad:\n            continue\n"
                "        (fast if name.startswith('fc.') else slow).append(p)\n"
                "    groups = [{'params': fast, 'lr': lr * 10}]\n    if slow:\n        groups.append({'params': slow, 'lr': lr})\n"
                "    return groups\n"),
            "helper and tuple": (
                "def _trainable(module):\n    return [p for p in module.parameters() if p.requires_grad]\n\n"
                "def head_groups(model, lr):\n    head = _trainable(model.fc)\n"
                "    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith('fc')]\n"
                "    return ({'params': head, 'lr': 10.0 * lr}, {'params': body, 'lr': lr})\n"),
        },
    },
    "evaluate_accuracy": {
        "wrong": {
            "no eval()": (
                "def evaluate_accuracy(model, batches, device):\n    correct = total = 0\n    with torch.no_grad():\n"
                "        for x, y in batches:\n            x, y = x.to(device), y.to(device)\n"
                "            correct += (model(x).argmax(1) == y).sum().item()\n            total += len(y)\n"
                "    return correct / total\n"),
            "no device move": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    correct = total = 0\n"
                "    with torch.no_grad():\n        for x, y in batches:\n"
                "            correct += (model(x).argmax(1) == y).sum().item()\n            total += len(y)\n"
                "    return correct / total\n"),
            "mean of batch accuracies": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    accs = []\n    with torch.no_grad():\n"
                "        for x, y in batches:\n            x, y = x.to(device), y.to(device)\n"
                "            accs.append((model(x).argmax(1) == y).float().mean().item())\n"
                "    return sum(accs) / len(accs)\n"),
            "gradients tracked": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    correct = total = 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n"
                "        correct += (model(x).argmax(1) == y).sum().item()\n        total += len(y)\n"
                "    return correct / total\n"),
            "percent": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    correct = total = 0\n"
                "    with torch.no_grad():\n        for x, y in batches:\n            x, y = x.to(device), y.to(device)\n"
                "            correct += (model(x).argmax(1) == y).sum().item()\n            total += len(y)\n"
                "    return 100 * correct / total\n"),
        },
        "right": {
            "counts": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    correct = total = 0\n"
                "    with torch.no_grad():\n        for x, y in batches:\n            x, y = x.to(device), y.to(device)\n"
                "            correct += (model(x).argmax(dim=1) == y).sum().item()\n            total += y.numel()\n"
                "    return correct / total\n"),
            "inference_mode, concatenated predictions": (
                "@torch.inference_mode()\ndef evaluate_accuracy(model, batches, device):\n    model.train(False)\n"
                "    predictions, labels = [], []\n    for inputs, targets in batches:\n"
                "        predictions.append(model(inputs.to(device)).argmax(1).cpu())\n        labels.append(targets.cpu())\n"
                "    return (torch.cat(predictions) == torch.cat(labels)).float().mean().item()\n"),
            "weighted batch accuracies, tensor result": (
                "def evaluate_accuracy(model, batches, device):\n    model.eval()\n    weighted, n = 0.0, 0\n"
                "    with torch.no_grad():\n        for x, y in batches:\n"
                "            x = x.to(device, non_blocking=True)\n            y = y.to(device, non_blocking=True)\n"
                "            weighted = weighted + (model(x).argmax(1) == y).float().mean() * len(y)\n            n += len(y)\n"
                "    return weighted / n\n"),
        },
    },
    "train_one_epoch": {
        "wrong": {
            "no zero_grad": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    total = n = 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n"
                "        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n        optimizer.step()\n"
                "        total += loss.item() * len(y)\n        n += len(y)\n    return total / n\n"),
            "zero_grad after backward": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    total = n = 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n"
                "        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n        optimizer.zero_grad()\n"
                "        optimizer.step()\n        total += loss.item() * len(y)\n        n += len(y)\n    return total / n\n"),
            "no model.train()": (
                "def train_one_epoch(model, batches, optimizer, device):\n    total = n = 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n        optimizer.zero_grad()\n"
                "        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n        optimizer.step()\n"
                "        total += loss.item() * len(y)\n        n += len(y)\n    return total / n\n"),
            "mean of batch losses": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    losses = []\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n        optimizer.zero_grad()\n"
                "        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n        optimizer.step()\n"
                "        losses.append(loss.item())\n    return sum(losses) / len(losses)\n"),
            "no device move": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    total = n = 0\n"
                "    for x, y in batches:\n        optimizer.zero_grad()\n        loss = F.cross_entropy(model(x), y)\n"
                "        loss.backward()\n        optimizer.step()\n        total += loss.item() * len(y)\n        n += len(y)\n"
                "    return total / n\n"),
            "step before backward": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    total = n = 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n        optimizer.zero_grad()\n"
                "        loss = F.cross_entropy(model(x), y)\n        optimizer.step()\n        loss.backward()\n"
                "        total += loss.item() * len(y)\n        n += len(y)\n    return total / n\n"),
        },
        "right": {
            "standard": (
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n    total, count = 0.0, 0\n"
                "    for x, y in batches:\n        x, y = x.to(device), y.to(device)\n        optimizer.zero_grad()\n"
                "        loss = F.cross_entropy(model(x), y)\n        loss.backward()\n        optimizer.step()\n"
                "        total += loss.item() * y.shape[0]\n        count += y.shape[0]\n    return total / count\n"),
            "summed loss, set_to_none, loss module": (
                "criterion = torch.nn.CrossEntropyLoss()\n\n"
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train(True)\n    sums = []\n    sizes = []\n"
                "    for inputs, labels in batches:\n        inputs = inputs.to(device)\n        labels = labels.to(device)\n"
                "        optimizer.zero_grad(set_to_none=True)\n        outputs = model(inputs)\n"
                "        loss = criterion(outputs, labels)\n        loss.backward()\n        optimizer.step()\n"
                "        sums.append(F.cross_entropy(outputs.detach(), labels, reduction='sum').item())\n"
                "        sizes.append(len(labels))\n    return sum(sums) / sum(sizes)\n"),
            "model.zero_grad and a helper": (
                "def _step(model, optimizer, x, y):\n    model.zero_grad()\n    loss = F.cross_entropy(model(x), y)\n"
                "    loss.backward()\n    optimizer.step()\n    return loss.detach()\n\n"
                "def train_one_epoch(model, batches, optimizer, device):\n    model.train()\n"
                "    total = torch.zeros(())\n    seen = 0\n    for x, y in batches:\n"
                "        x, y = x.to(device), y.to(device)\n        total += _step(model, optimizer, x, y) * len(y)\n"
                "        seen += len(y)\n    return (total / seen).item()\n"),
        },
    },
    "freeze_by_hand": {
        "wrong": {
            "requires_grad only (the naive freeze)": (
                "def freeze_through_layer3(model):\n    for part in (model.conv1, model.bn1, model.layer1, model.layer2, model.layer3):\n"
                "        part.requires_grad_(False)\n    return model\n\ndef train_mode(model):\n    model.train()\n"),
            "eval once, then model.train()": (
                "def freeze_through_layer3(model):\n    for part in (model.conv1, model.bn1, model.layer1, model.layer2, model.layer3):\n"
                "        part.requires_grad_(False)\n        part.eval()\n    return model\n\ndef train_mode(model):\n    model.train()\n"),
            "layer4 frozen too": (
                "def freeze_through_layer3(model):\n    for name, p in model.named_parameters():\n"
                "        if not name.startswith('fc'):\n            p.requires_grad_(False)\n    return model\n\n"
                "def train_mode(model):\n    model.train()\n    for name, m in model.named_modules():\n"
                "        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith('layer4'):\n            m.eval()\n"),
            "stem forgotten": (
                "def freeze_through_layer3(model):\n    for part in (model.layer1, model.layer2, model.layer3):\n"
                "        part.requires_grad_(False)\n    return model\n\ndef train_mode(model):\n    model.train()\n"
                "    for part in (model.layer1, model.layer2, model.layer3):\n        for m in part.modules():\n"
                "            if isinstance(m, torch.nn.BatchNorm2d):\n                m.eval()\n"),
            "everything in eval mode": (
                "def freeze_through_layer3(model):\n    for part in (model.conv1, model.bn1, model.layer1, model.layer2, model.layer3):\n"
                "        part.requires_grad_(False)\n    return model\n\ndef train_mode(model):\n    model.eval()\n"),
        },
        "right": {
            "list of stages": (
                "FROZEN = ('conv1', 'bn1', 'layer1', 'layer2', 'layer3')\n\n"
                "def freeze_through_layer3(model):\n    for name in FROZEN:\n        getattr(model, name).requires_grad_(False)\n"
                "    return model\n\ndef train_mode(model):\n    model.train()\n    for name in FROZEN:\n"
                "        for m in getattr(model, name).modules():\n            if isinstance(m, torch.nn.BatchNorm2d):\n"
                "                m.eval()\n"),
            "by name prefix": (
                "def freeze_through_layer3(model):\n    for name, p in model.named_parameters():\n"
                "        p.requires_grad = name.startswith(('layer4', 'fc'))\n    return model\n\n"
                "def train_mode(model):\n    model.train()\n    for name, module in model.named_modules():\n"
                "        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not name.startswith('layer4'):\n"
                "            module.eval()\n"),
            "frozen BatchNorm found by requires_grad": (
                "def freeze_through_layer3(model):\n    stem_to_layer3 = [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3]\n"
                "    for module in stem_to_layer3:\n        for p in module.parameters():\n            p.requires_grad_(False)\n"
                "    return model\n\ndef train_mode(model):\n    model.train()\n    for m in model.modules():\n"
                "        if isinstance(m, torch.nn.BatchNorm2d) and not m.weight.requires_grad:\n            m.eval()\n"),
        },
    },
    "choose_depth": {
        "wrong": {
            "diverged runs not skipped": "def choose_depth(rows):\n    return max(rows, key=lambda r: r['val_acc'])['depth']\n",
            "position, not depth": (
                "def choose_depth(rows):\n    ok = [r['val_acc'] if r['val_acc'] is not None else -1 for r in rows]\n"
                "    return ok.index(max(ok))\n"),
            "lowest accuracy": (
                "def choose_depth(rows):\n    ok = [r for r in rows if r['val_acc'] is not None]\n"
                "    return min(ok, key=lambda r: r['val_acc'])['depth']\n"),
            "the whole row": (
                "def choose_depth(rows):\n    ok = [r for r in rows if r['val_acc'] is not None]\n"
                "    return max(ok, key=lambda r: r['val_acc'])\n"),
            "a literal read off a normal-mode run": "def choose_depth(rows):\n    return 4\n",
            "the cheapest run": (
                "def choose_depth(rows):\n    ok = [r for r in rows if r['val_acc'] is not None]\n"
                "    return min(ok, key=lambda r: r['trainable_params'])['depth']\n"),
        },
        "right": {
            "filter then max": (
                "def choose_depth(rows):\n    finished = [r for r in rows if not r['diverged']]\n"
                "    return max(finished, key=lambda r: r['val_acc'])['depth']\n"),
            "loop": (
                "def choose_depth(rows):\n    best_depth, best_acc = None, -1.0\n    for r in rows:\n"
                "        if r['val_acc'] is not None and r['val_acc'] > best_acc:\n"
                "            best_depth, best_acc = r['depth'], r['val_acc']\n    return int(best_depth)\n"),
            "sorted, ties to fewer trained parameters": (
                "def choose_depth(rows):\n    ranked = sorted((r for r in rows if r['val_acc'] is not None),\n"
                "                    key=lambda r: (r['val_acc'], -r['trainable_params']), reverse=True)\n"
                "    return ranked[0]['depth']\n"),
        },
    },
}
