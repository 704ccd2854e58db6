"""Answers the lesson-1 checks are tested with: each must score 0 (wrong) or full marks (right) on both the public check and the hidden tests."""
CASES = {
    "gd_step": {
        "wrong": {
            "adds the gradient": "def gd_step(theta, grad, lr):\n    return theta + lr * grad\n",
            "ignores the learning rate": "def gd_step(theta, grad, lr):\n    return theta - grad\n",
            "subtracts the learning rate only": "def gd_step(theta, grad, lr):\n    return theta - lr\n",
            "returns the step, not the parameters": "def gd_step(theta, grad, lr):\n    return -lr * grad\n",
            "updates the caller's theta in place":
                "def gd_step(theta, grad, lr):\n    theta -= lr * grad\n    return theta\n",
            "updates in place and returns None": "def gd_step(theta, grad, lr):\n    theta -= lr * grad\n",
            "steps along theta instead of the gradient": "def gd_step(theta, grad, lr):\n    return theta - lr * theta\n",
        },
        "right": {
            "one line": "def gd_step(theta, grad, lr):\n    return theta - lr * grad\n",
            "in place on a copy":
                "def gd_step(theta, grad, lr):\n    new_theta = theta.copy()\n    new_theta -= lr * grad\n    return new_theta\n",
            "a loop over the coordinates":
                "def gd_step(theta, grad, lr):\n"
                "    updated = []\n"
                "    for value, slope in zip(theta, grad):\n"
                "        updated.append(value - lr * slope)\n"
                "    return np.array(updated)\n",
            "torch": "def gd_step(theta, grad, lr):\n"
                     "    return (torch.as_tensor(theta) - lr * torch.as_tensor(grad)).numpy()\n",
            "numpy ufuncs": "def gd_step(theta, grad, lr):\n    return np.subtract(theta, np.multiply(lr, grad))\n",
        },
    },
    "numerical_grad": {
        "wrong": {
            "forward difference":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    theta = np.asarray(theta, dtype=float)\n"
                "    grad = np.zeros_like(theta)\n"
                "    for i in range(theta.size):\n"
                "        step = np.zeros_like(theta)\n"
                "        step[i] = eps\n"
                "        grad[i] = (fn(theta + step) - fn(theta)) / eps\n"
                "    return grad\n",
            "backward difference":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    base = fn(theta)\n"
                "    out = []\n"
                "    for k in range(len(theta)):\n"
                "        shifted = theta.copy()\n"
                "        shifted[k] -= eps\n"
                "        out.append((base - fn(shifted)) / eps)\n"
                "    return np.array(out)\n",
            "eps not halved":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    theta = np.asarray(theta, dtype=float)\n"
                "    grad = np.zeros_like(theta)\n"
                "    for i in range(theta.size):\n"
                "        step = np.zeros_like(theta)\n"
                "        step[i] = eps\n"
                "        grad[i] = (fn(theta + step) - fn(theta - step)) / eps\n"
                "    return grad\n",
            "modifies the caller's theta":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    grad = np.zeros_like(theta)\n"
                "    for i in range(len(theta)):\n"
                "        theta[i] += eps\n"
                "        up = fn(theta)\n"
                "        theta[i] -= 2 * eps\n"
                "        grad[i] = (up - fn(theta)) / (2 * eps)\n"
                "    return grad\n",
            "all coordinates at once":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    slope = (fn(theta + eps) - fn(theta - eps)) / (2 * eps)\n"
                "    return np.full(len(theta), slope)\n",
            "one step vector never reset":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    grad = np.zeros(len(theta))\n"
                "    step = np.zeros(len(theta))\n"
                "    for i in range(len(theta)):\n"
                "        step[i] = eps\n"
                "        grad[i] = (fn(theta + step) - fn(theta - step)) / (2 * eps)\n"
                "    return grad\n",
            "returns None":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    grad = np.zeros(len(theta))\n"
                "    for i in range(len(theta)):\n"
                "        step = np.zeros(len(theta))\n"
                "        step[i] = eps\n"
                "        grad[i] = (fn(theta + step) - fn(theta - step)) / (2 * eps)\n",
        },
        "right": {
            "a loop with a unit step": (
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    theta = np.asarray(theta, dtype=float)\n"
                "    grad = np.zeros_like(theta)\n"
                "    for i in range(theta.size):\n"
                "        step = np.zeros_like(theta)\n"
                "        step[i] = eps\n"
                "        grad[i] = (fn(theta + step) - fn(theta - step)) / (2 * eps)\n"
                "    return grad\n"),
            "rows of a scaled identity, as a comprehension":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    nudges = np.eye(len(theta)) * eps\n"
                "    return np.array([(fn(theta + e) - fn(theta - e)) / (2 * eps) for e in nudges])\n",
            "a helper inside the cell, copies perturbed":
                "def _central(fn, point, i, h):\n"
                "    up, down = point.copy(), point.copy()\n"
                "    up[i] += h\n"
                "    down[i] -= h\n"
                "    return (fn(up) - fn(down)) / (2 * h)\n"
                "\n"
                "\n"
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    point = np.array(theta, dtype=float)\n"
                "    return np.array([_central(fn, point, i, eps) for i in range(point.size)])\n",
            "in place on the caller's theta, restoring each value exactly":
                "def numerical_grad(fn, theta, eps=1e-5):\n"
                "    grad = np.zeros(len(theta))\n"
                "    for i in range(len(theta)):\n"
                "        original = theta[i]\n"
                "        theta[i] = original + eps\n"
                "        up = fn(theta)\n"
                "        theta[i] = original - eps\n"
                "        down = fn(theta)\n"
                "        theta[i] = original\n"
                "        grad[i] = (up - down) / (2 * eps)\n"
                "    return grad\n",
        },
    },
    "converging_lr": {
        "wrong": {
            "exactly the bound 2/L": "my_lr = 2 / problem.largest_curvature\n",
            "just above the bound": "my_lr = 0.105\n",
            "just below the bound: still bouncing when the budget ends": "my_lr = 0.099\n",
            "too small to arrive within the budget": "my_lr = 0.03\n",
            "the bound of the shallow direction": "my_lr = 2 / problem.curvatures.min()\n",
            "a string, not a number": "my_lr = '0.07'\n",
            "no value": "my_lr = None\n",
        },
        "right": {
            "a number in the window": "my_lr = 0.07\n",
            "1/L": "my_lr = 1 / problem.largest_curvature\n",
            "the best fixed rate from the curvatures":
                "curvature = problem.curvatures\nmy_lr = 2 / (curvature.min() + curvature.max())\n",
            "a grid searched by final loss":
                "candidates = np.linspace(0.01, 0.12, 23)\n"
                "final_losses = [gd.run_on(problem, a, budget, start=start).final_loss for a in candidates]\n"
                "my_lr = float(candidates[int(np.argmin(final_losses))])\n",
            "90% of the bound": "my_lr = 0.9 * gd.stability_bound(problem)\n",
        },
    },
    "train_linear": {
        "wrong": {
            "no zero_grad (the broken loop)":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        loss = F.mse_loss(model(x), y)\n"
                "        loss.backward()\n"
                "        optimizer.step()\n"
                "    return model\n",
            "zero_grad after backward":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        loss = F.mse_loss(model(x), y)\n"
                "        loss.backward()\n"
                "        optimizer.zero_grad()\n"
                "        optimizer.step()\n"
                "    return model\n",
            "step between zero_grad and backward":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        optimizer.zero_grad()\n"
                "        loss = F.mse_loss(model(x), y)\n"
                "        optimizer.step()\n"
                "        loss.backward()\n"
                "    return model\n",
            "no step":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        optimizer.zero_grad()\n"
                "        loss = F.mse_loss(model(x), y)\n"
                "        loss.backward()\n"
                "    return model\n",
            "gradient ascent by hand":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    for _ in range(steps):\n"
                "        model.zero_grad()\n"
                "        F.mse_loss(model(x), y).backward()\n"
                "        with torch.no_grad():\n"
                "            for p in model.parameters():\n"
                "                p += lr * p.grad\n"
                "    return model\n",
            "forgets to return the model":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        optimizer.zero_grad()\n"
                "        F.mse_loss(model(x), y).backward()\n"
                "        optimizer.step()\n",
        },
        "right": {
            "zero_grad first": (
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        optimizer.zero_grad()\n"
                "        loss = F.mse_loss(model(x), y)\n"
                "        loss.backward()\n"
                "        optimizer.step()\n"
                "    return model\n"),
            "zero_grad last, nn.MSELoss":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    net = torch.nn.Linear(1, 1)\n"
                "    criterion = torch.nn.MSELoss()\n"
                "    sgd = torch.optim.SGD(net.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        criterion(net(x), y).backward()\n"
                "        sgd.step()\n"
                "        sgd.zero_grad()\n"
                "    return net\n",
            "the update by hand, no optimizer":
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    for _ in range(steps):\n"
                "        model.zero_grad()\n"
                "        ((model(x) - y) ** 2).mean().backward()\n"
                "        with torch.no_grad():\n"
                "            for p in model.parameters():\n"
                "                p -= lr * p.grad\n"
                "    return model\n",
            "a helper for one step":
                "def _one_step(model, optimizer, x, y):\n"
                "    optimizer.zero_grad()\n"
                "    loss = F.mse_loss(model(x), y)\n"
                "    loss.backward()\n"
                "    optimizer.step()\n"
                "    return loss.item()\n"
                "\n"
                "\n"
                "def train_linear(x, y, lr=0.1, steps=150):\n"
                "    model = torch.nn.Linear(1, 1)\n"
                "    optimizer = torch.optim.SGD(model.parameters(), lr=lr)\n"
                "    for _ in range(steps):\n"
                "        _one_step(model, optimizer, x, y)\n"
                "    return model\n",
        },
    },
}
